"""The core: the method contract's types, the declared activations and the generic step."""
