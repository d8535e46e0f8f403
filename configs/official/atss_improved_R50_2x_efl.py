# The official EFL release's detector (United-Perception 0.1.0, improved baseline + EFL, R-50)
# as a config diff of LVIS/atss_improved_R50_2x_efl.py: the official architecture (P6/P7 from
# C5's lateral, stride in the 3x3 conv, RGB input normalised as torchvision's) and test pipeline
# (OpenCV resize, padding to 64, the release's NMS, inclusive clipping and result boxes), which
# make the model an efl_d2.official.OfficialATSS. With it tools/train_net.py evaluates the
# released weights (train.init_checkpoint: the model zoo's URL, or a downloaded copy) as the
# official code computes them:
#   tools/train_net.py --config-file configs/official/atss_improved_R50_2x_efl.py --eval-only
# model_zoo.get_config("LVIS/atss_improved_R50_2x_efl.py", trained=True) is the same config.
from efl_d2.model_zoo import get_checkpoint_url
from efl_d2.official import official_architecture, official_inference

from ..LVIS.atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

official_inference(official_architecture(model, dataloader), dataloader)
train.init_checkpoint = get_checkpoint_url("LVIS/atss_improved_R50_2x_efl.py")
