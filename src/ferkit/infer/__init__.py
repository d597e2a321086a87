"""Inference: faces found in photos, videos and webcams, and their emotions.

    from ferkit.infer import Recognizer, SAMPLE_PHOTO, annotate
    rec = Recognizer.load()                   # the shipped default model and OpenCV's Haar face detector
    faces = rec.predict(SAMPLE_PHOTO)         # [Face(box=(x, y, w, h), emotions={...}), ...]
    image = annotate(cv2.imread(str(SAMPLE_PHOTO)), faces)

Data flows one way: source (``source``) -> faces (``detect``, ``crop``) -> probabilities (``classify``) ->
results (``recognizer``, ``video``) -> sinks (``draw``, ``batch``).
"""

from ferkit.infer.batch import PhotoResult, PredictRun, predict_inputs
from ferkit.infer.classify import BACKENDS, Classifier, load_classifier
from ferkit.infer.detect import DETECTORS, Detection, get_detector, list_detectors
from ferkit.infer.draw import annotate
from ferkit.infer.recognizer import Face, Recognizer
from ferkit.infer.source import SAMPLE_PHOTO, open_source, read_image
from ferkit.infer.video import TrackSummary, VideoResult, process_video

__all__ = [
    "BACKENDS",
    "DETECTORS",
    "SAMPLE_PHOTO",
    "Classifier",
    "Detection",
    "Face",
    "PhotoResult",
    "PredictRun",
    "Recognizer",
    "TrackSummary",
    "VideoResult",
    "annotate",
    "get_detector",
    "list_detectors",
    "load_classifier",
    "open_source",
    "predict_inputs",
    "process_video",
    "read_image",
]
