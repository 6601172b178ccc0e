"""Code both services' images contain: the settings types and the log format they share.

Nothing here imports ``backend`` or ``frontend``; each image copies this folder beside its own.
"""
