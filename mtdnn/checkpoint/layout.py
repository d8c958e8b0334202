"""File and folder names of the checkpoint format (see mtdnn/checkpoint/__init__.py)."""

# 2: run metadata (step, score, loss weights) moved from mtdnn.json to metrics.json
FORMAT_VERSION = 2
REGISTRY_FILE = "mtdnn.json"
HEADS_FILE = "heads.safetensors"
SPEC_FILE = "spec.yaml"
METRICS_FILE = "metrics.json"
GROUP_ENCODERS_DIR = "encoders"
STATE_FILE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
EXAMPLE = "give a checkpoint directory written by `mtdnn train`, e.g. runs/tour/best"
# torch's words for a truncated file and for weights of another shape
DAMAGED_STATE = ("PytorchStreamReader", "Error(s) in loading state_dict", "size mismatch")
