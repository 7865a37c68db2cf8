"""cot-distill's SeqIO registry: importing it registers every task and mixture.

Installed as `cot_distill_tasks` (pyproject maps the `tasks/` folder to that
name, so it never clashes with another project's `tasks`). In T5X:

    --gin.MIXTURE_OR_TASK_MODULE="'cot_distill_tasks'"
    --gin.MIXTURE_OR_TASK_NAME="'cot_distill.gsm8k.gpt3.cot'"

Import reads no file and touches no network (data loads on first use); the
vocabulary path comes from env COT_DISTILL_SPM_PATH (else T5's vocabulary,
shipped in the package), annotation runs from COT_DISTILL_RUNS_DIR, benchmark files from
COT_DISTILL_DATA_DIR. See README.md in this folder for names, caching and
how to add a run.
"""

from . import registry
from . import runs

registry.register_all()
