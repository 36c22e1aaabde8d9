"""notme_mlx.data"""
