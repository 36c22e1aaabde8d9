"""notme_mlx.eval"""
