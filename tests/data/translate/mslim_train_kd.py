# Shape of mslim's CIFAR-100 vanilla-KD example script (Midea mslim, distillation README / train script):
# the config dict is built inside the script, next to objects the translator must not evaluate.
import os

import torch

from mslim.algorithms.pytorch.distillation.distiller import Distiller

LR = 0.01

if __name__ == '__main__':
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    modelS = model_arch('resnet20', 100, device)
    modelT = model_arch('resnet56', 100, device)
    modelT.load_state_dict(torch.load(os.path.join('/pretrain', 'resnet56_cifar100.pt')))
    config = {
        'student_model': modelS,
        'teacher_model': modelT,
        'student_distill_layer': ['linear'],
        'teacher_distill_layer': ['linear'],
        'loss': [dict(type='vanilla_kd', T=4)],
        'weights': [0.2],
        'student_out_layer': ['linear'],
        'device': device
    }
    distiller_instance = Distiller(config)
    os.system('echo this line must never run')
