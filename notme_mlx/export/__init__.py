"""notme_mlx.export"""
