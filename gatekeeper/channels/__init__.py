"""Step 5, act: the only code that sends. One module per channel."""
