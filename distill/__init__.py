"""Self-distillation for semi-supervised facial landmarks (paper §3.5, §4 Figs. 3-4); builds on landmarks/."""
