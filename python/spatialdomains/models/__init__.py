"""The mathematics of each model (networks, augmentations, losses, training functions) and the shared trainer;
each method's options and recipe are in :mod:`spatialdomains.methods`."""
