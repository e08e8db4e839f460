"""Emotion recognition (paper App. D.1, Table 12): AffectNet valence, arousal and expression; see emotion/README.md."""
