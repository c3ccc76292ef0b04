"""The 3D volume classifier (severity labels, Inception Score, augmentation experiments)."""
