"""notme_mlx.cluster"""
