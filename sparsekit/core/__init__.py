"""The core: the method contract's types (``contract``) and the declarations methods state and
return (``declarations``), the declared activations and the generic step."""
