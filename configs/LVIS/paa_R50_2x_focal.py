# PAA R-50-FPN (configs/common/models/paa.py), focal loss. Paper: Table 1 / 6 "PAA" (23.7 AP).
# No stabilized settings (the paper names only RetinaNet and FCOS* as trained with them).
from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train
from ..common.lvis_one_stage import lvis_one_stage
from ..common.models.paa import model

model = lvis_one_stage(model)
