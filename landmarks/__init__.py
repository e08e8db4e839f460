"""Facial landmark localisation by heatmap regression (paper §5.2, Tables 5-6); see landmarks/README.md."""
