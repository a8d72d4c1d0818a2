"""The one training stack: what a batch is cut from (batches), the loop with its losses, checkpoints and curve
(loop), and the ledger of long runs. Imports core, data and voices only."""
