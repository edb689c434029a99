library(testthat)
library(spatialdomains)

test_check("spatialdomains")
