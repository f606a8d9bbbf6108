"""What a controller knows exists: discovery deltas, reports up the tree, regional and global views."""
