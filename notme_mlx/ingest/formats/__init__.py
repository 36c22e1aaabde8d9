"""One module per export format; each exposes `parse(source, ctx)` and `sniff(head, name)`."""
