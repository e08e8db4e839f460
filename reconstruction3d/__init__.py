"""3D face reconstruction, spiral-convolution mesh decoder (paper §5.5, Table 9, Fig. 6); see README.md."""
