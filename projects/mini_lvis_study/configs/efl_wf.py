# Study variant "weighting factor only" (paper Table 3, row WF): every class keeps gamma_b.
from .efl import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss.focusing_factor = False
