"""Small tools every part uses: files written whole, where a command may write, bounded reads, progress bars."""
