"""facerep: shared code for pre-training and face-task adaptation (Bulat et al., ECCV 2022)."""
