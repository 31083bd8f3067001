"""towers"""
