"""Motion data: clip cutting, 2D normalisation and the H36M 2D->3D lifting dataset."""
