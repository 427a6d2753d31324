"""What a learner meets: figures, the interactive attention explorer and its benchmark, the photo explorer, the
exercise checks and their reference solutions, and the runner that executes the notebooks headless.

The top layer: may import everything below it. Its heavy dependencies (matplotlib, ipywidgets, papermill) are the
``course`` extra.
"""
