## Spot positions and images of a Seurat object's spatial images, shared by the R package's Seurat door and the
## command line's .rds door (spatialdomains._rds), so that both read every image class the same way. Sourced into
## an environment of its own; needs SeuratObject. Positions are full-resolution pixels, x = image column,
## y = image row.

## Whether GetTissueCoordinates() of this image gives x as the image row: Seurat 5.0 to 5.3 built VisiumV2 images
## from (imagerow, imagecol). Seurat 5.4 (SeuratObject 5.3) builds them from (imagecol, imagerow) and marks that
## with coords_x_orientation = "horizontal"; UpdateSeuratObject() converts older objects the same way.
x_is_image_row <- function(image) {
    if (!methods::is(image, "VisiumV2")) {
        return(FALSE)
    }
    flag <- if ("coords_x_orientation" %in% methods::slotNames(image)) {
        methods::slot(image, "coords_x_orientation")
    } else {
        character(0)
    }
    !identical(as.character(flag), "horizontal")
}

## x, y of one image's spots, rows named by spot. VisiumV1 keeps them in its 'coordinates' slot (imagecol,
## imagerow); other images (VisiumV2, FOV, SlideSeq) through GetTissueCoordinates(), which names the spots in a
## 'cell' column or in its row names.
image_positions <- function(image) {
    if ("coordinates" %in% methods::slotNames(image) &&
        all(c("imagecol", "imagerow") %in% names(methods::slot(image, "coordinates")))) {
        xy <- methods::slot(image, "coordinates")[, c("imagecol", "imagerow")]
        return(data.frame(x = xy[[1]], y = xy[[2]], row.names = rownames(xy)))
    }
    coordinates <- SeuratObject::GetTissueCoordinates(image)
    spots <- if ("cell" %in% names(coordinates)) coordinates$cell else rownames(coordinates)
    if (x_is_image_row(image)) {
        return(data.frame(x = coordinates$y, y = coordinates$x, row.names = spots))
    }
    data.frame(x = coordinates$x, y = coordinates$y, row.names = spots)
}

## The tissue picture of a Visium image (VisiumV1 or VisiumV2: both keep the lowres picture in 'image') with its
## scale factors, or NULL for an image without one.
image_picture <- function(image) {
    if (!"image" %in% methods::slotNames(image) || length(dim(methods::slot(image, "image"))) != 3L) {
        return(NULL)
    }
    factors <- methods::slot(image, "scale.factors")
    list(array = methods::slot(image, "image"), spot = factors$spot, fiducial = factors$fiducial,
         hires = factors$hires, lowres = factors$lowres)
}
