"""The shared rules every stage uses, each written once: errors, names and text limits,
settings (yes/no and size grammars, ``ZOO_*`` variables), the warning channel. Nothing here
imports anything else from zoo, so any module may import it cheaply."""
