"""Data: file formats, downloads and the Dataset the trainer reads."""
