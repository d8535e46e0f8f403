# Study variant "focusing factor only" (paper Table 3, row FF): w_j = 1.
from .efl import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss.weighting_factor = False
