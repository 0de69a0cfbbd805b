# Shapes of open-mmlab/mmrazor configs/distill/mmcls/dkd/dkd_resnet34_resnet18_8xb32_in1k.py (DKD with a
# gt_labels argument recorded from the loss module's inputs) and .../rkd/rkd_neck_resnet34_resnet18_8xb32_in1k.py
# (distance- and angle-wise RKD on the pooled neck), merged into one distiller.
teacher_ckpt = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth'  # noqa: E501
model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=dict(cfg_path='mmcls::resnet/resnet18_8xb32_in1k.py', pretrained=False),
    teacher=dict(cfg_path='mmcls::resnet/resnet34_8xb32_in1k.py', pretrained=True),
    teacher_ckpt=teacher_ckpt,
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            fc=dict(type='ModuleOutputs', source='head.fc'),
            feat=dict(type='ModuleOutputs', source='neck.gap'),
            gt_labels=dict(type='ModuleInputs', source='head.loss_module')),
        teacher_recorders=dict(
            fc=dict(type='ModuleOutputs', source='head.fc'),
            feat=dict(type='ModuleOutputs', source='neck.gap')),
        distill_losses=dict(
            loss_dkd=dict(type='DKDLoss', tau=1, beta=0.5, loss_weight=1, reduction='mean'),
            loss_dw=dict(type='DistanceWiseRKD', with_l2_norm=True, loss_weight=25),
            loss_aw=dict(type='AngleWiseRKD', with_l2_norm=True, loss_weight=50)),
        loss_forward_mappings=dict(
            loss_dkd=dict(
                preds_S=dict(from_student=True, recorder='fc'),
                preds_T=dict(from_student=False, recorder='fc'),
                gt_labels=dict(recorder='gt_labels', from_student=True, data_idx=1)),
            loss_dw=dict(
                preds_S=dict(from_student=True, recorder='feat'),
                preds_T=dict(from_student=False, recorder='feat')),
            loss_aw=dict(
                preds_S=dict(from_student=True, recorder='feat'),
                preds_T=dict(from_student=False, recorder='feat')))))

find_unused_parameters = True
