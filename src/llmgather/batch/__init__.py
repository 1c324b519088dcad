"""The batch lane: the providers' batch APIs (half the online price) behind the same input and output."""
