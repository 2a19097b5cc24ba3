"""Parent package of every sandbox's namespaced modules (``sandboxes.<id>.<module>``)."""
