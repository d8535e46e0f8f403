# Table 5 row 2, "STS" (26.1 AP): the original ATSS head (neither IA nor IB) with EFL and the
# stabilized settings; "STS + IB" without the IoU branch.
from ..common.models.atss import model as _atss
from .atss_R50_2x_efl_sts_ib import dataloader, lr_multiplier, model, optimizer, train

model.quality = _atss.quality
