"""towers/data"""
