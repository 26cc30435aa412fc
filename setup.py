from setuptools import find_packages, setup

setup(
    name="keras-lottery",
    version="0.1.0",
    description="Lottery tickets for Keras: iterative magnitude pruning with rewinding on tfmot wrappers",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_lottery", "keras_lottery.*"]),
    python_requires=">=3.9",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tf_keras>=2.16,<2.22",
        "tensorflow-model-optimization>=0.8,<0.9",
        "numpy",
        "matplotlib",
        "mnist1d",
        "ai-edge-litert",
    ],
    extras_require={
        # keras_lottery.data.load (tfds), keras_lottery.tuning, keras_lottery.tensorboard
        "tfds": ["tensorflow-datasets>=4.9"],
        "tuning": ["keras-tuner>=1.4,<1.5"],
        "tensorboard": ["tensorboard>=2.16"],
        # the test suite exercises every optional integration
        "test": [
            "pytest",
            "tensorflow-datasets>=4.9",
            "keras-tuner>=1.4,<1.5",
            "tensorboard>=2.16",
        ],
    },
    entry_points={"console_scripts": ["keras-lottery=keras_lottery.cli:main"]},
)
