"""What the config's training keys mean to a run, as plain data (no torch), so that the workflow's rule
params (``config.keys``) and the run fingerprint (``train.settings``) share one list each."""

MODES = ("paired", "unpaired")
# Loss weights only one mode uses: a run's fingerprint and the train rule's params leave the other
# mode's out, so changing them reruns nothing.
MODE_ONLY = {"paired": ("lambda_labelmix",), "unpaired": ("lambda_seg", "lambda_adv", "r1_gamma", "r1_every")}
# Settings that change how a run is carried out, not what it learns (device, cadences of a run that
# resumes, memory, compile): not rule params, so changing one reruns nothing; the script reads them.
HOW_KEYS = ("device", "eval_every", "sample_every", "checkpoint_every", "ram_cache_gb", "compile")
