"""A plugin that claims ``example_tiny_segnet``, the example plugin's model name.

It returns a :class:`zoo.ModelCard` object (the example returns a YAML path), so both item
kinds of ``zoo_models`` go through the clash check.
"""

from zoo import ModelCard, OutputContract, Preprocessing, hookimpl


@hookimpl
def zoo_models() -> list[ModelCard]:
    return [
        ModelCard(
            name="example_tiny_segnet",
            family="clash",
            description="Not the example plugin's model: same name, different plugin.",
            architecture="clash_arch",
            license="MIT",
            num_params=1,
            num_classes=2,
            preprocessing=Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), input_size=(8, 8)),
            output=OutputContract(kind="tensor", channels=2),
            labels=["background", "thing"],
            palette=[(0, 0, 0), (255, 255, 255)],
        ),
        ModelCard(
            name="clash_only_model",
            family="clash",
            description="A model only this plugin defines; it stays available.",
            architecture="clash_arch",
            license="MIT",
            num_params=1,
            num_classes=2,
            preprocessing=Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), input_size=(8, 8)),
            output=OutputContract(kind="tensor", channels=2),
            labels=["background", "thing"],
            palette=[(0, 0, 0), (255, 255, 255)],
        ),
    ]
