"""Face recognition (paper §5.1, Table 4): CosFace on VGGFace2, IJB-B / IJB-C 1:1 verification."""
