"""AU intensity estimation (paper §5.3, Tables 3, 7, 8, 10, 11): DISFA and BP4D, linear head, ICC; see au_intensity/README.md."""
