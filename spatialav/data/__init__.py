"""Datasets on disk and the input pipeline.

``schema`` defines the one example layout every spatialav dataset uses (int16 ambiX audio,
JPEG equirect frames, optional ground-truth groups) and validates clips against it;
``storage`` writes and reads it as a TFDS array_record dataset without TensorFlow;
``synthetic`` builds the ``spatialav_synthetic`` dataset from the scene renderer;
``transforms`` holds the per-clip host and device transforms of the pipeline.
"""
