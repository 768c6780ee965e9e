"""Small tools every part uses: files written whole, where a command may write, bounded reads, progress bars,
and the one "did you mean" of every message that refuses a name."""
