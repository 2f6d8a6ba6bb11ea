"""Self-contained runtime loaders, one module per format (see zoo.export.base).

Each module may import only its runtime: ``zoo verify`` runs its source in an isolated child
process that has neither zoo nor torchvision.
"""
