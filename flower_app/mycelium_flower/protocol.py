"""Record keys shared by the ServerApp and the ClientApp (the TRAIN message and its reply)."""

ARRAYS_KEY = "arrays"  # ArrayRecord: the model, in mycelium.learning.model's get_weights order
CONFIG_KEY = "config"  # ConfigRecord: server-round, local-epochs, lr, batch-size
METRICS_KEY = "metrics"  # MetricRecord of the reply
NUM_EXAMPLES_KEY = "num-examples"  # FedAvg weight
ROUND_KEY = "server-round"
ACCURACY_KEY = "val_accuracy"  # incoming group model on the member's own val split
LOSS_KEY = "val_loss"
