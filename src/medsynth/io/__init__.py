"""Reading and writing volumes, tables and images with their geometry."""
