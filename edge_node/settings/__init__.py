"""The configuration's sections, by what they configure, and how raw values become them."""
