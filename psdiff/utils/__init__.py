"""Small helpers shared by two or more parts of psdiff."""
