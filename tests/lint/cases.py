"""Invalid and valid snippets for every rule, run as tests by ``test_rules_cases.py``.

An invalid snippet marks each line that must be reported with ``# expect: GG1xx`` (several codes
comma-separated); the test asserts that exactly those (line, code) pairs are found. A valid snippet
must produce no finding of its rule (nor of any other enabled rule: the snippets are clean code).
Each "deliberately leaves alone" item of the rules table has at least one valid snippet here.
"""

from __future__ import annotations

INVALID: dict[str, list[str]] = {
    "GG101": [
        # train() in this function, then a no_grad block
        """
import torch

def evaluate(model, loader):
    model.train()
    with torch.no_grad():
        for x in loader:
            model(x)  # expect: GG101
""",
        # a function decorated with no_grad, a checkpoint loaded into a torchvision model
        """
import torch
import torchvision

@torch.no_grad()
def predict(x):
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load("weights.pt"))
    return model(x)  # expect: GG101
""",
        # built here from a module class of this file that has dropout
        """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(x)

net = Net()
with torch.no_grad():
    out = net(torch.ones(1))  # expect: GG101
""",
        # aliases: from torch import no_grad as ..., inference_mode, a chain
        """
from torch import inference_mode, no_grad as ng

def run(net, device, x):
    net.to(device).train()
    with ng():
        a = net(x)  # expect: GG101
    with inference_mode():
        b = net(x)  # expect: GG101
    return a, b
""",
        # import torch as T; a torch.nn container with dropout built here
        """
import torch as T

net = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Dropout(0.5))
with T.no_grad():
    y = net(T.ones(1, 4))  # expect: GG101
""",
        # attribute receivers
        """
import torch

class Runner:
    def check(self, x):
        self.model.train()
        with torch.no_grad():
            return self.model(x)  # expect: GG101
""",
        # a checkpoint loaded into a freshly built model, eval() forgotten
        """
import torch
from mypackage import ResNet

model = ResNet()
model.load_state_dict(torch.load("weights.pt"))
with torch.no_grad():
    print(model(torch.ones(1, 3, 8, 8)))  # expect: GG101
""",
        # torchvision factories build models in training mode
        """
import torch
import torchvision

model = torchvision.models.resnet18()
with torch.no_grad():
    y = model(torch.ones(1, 3, 8, 8))  # expect: GG101
""",
    ],
    "GG102": [
        """
def evaluate(model, loader):
    model.eval()
    correct = 0
    for x, y in loader:
        out = model(x)  # expect: GG102
        correct += (out.argmax(1) == y).sum().item()
    return correct
""",
        # a script's top level; the loss is summed too (GG106)
        """
import torch
from torch import nn

model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
model.eval()
total = 0
for x in torch.ones(3, 4):
    logits = model(x)  # expect: GG102
    total += logits.sum()  # expect: GG106
print(total.item())
""",
        # train(False) is eval(); an attribute receiver
        """
class Evaluator:
    def run(self, batches):
        self.net.train(False)
        scores = [self.net(b) for b in batches]  # expect: GG102
        print(len(scores))
""",
        # the eval() comes from a helper of the same module
        """
def freeze(model):
    model.eval()

def score(model, x):
    freeze(model)
    y = model(x)  # expect: GG102
    print(y.mean().item())
""",
    ],
    "GG103": [
        # a while loop with an evaluation every 100 steps and no train() after it
        """
import torch

def fit(model, optimizer, batches, evaluate_every):
    model.train()
    step = 0
    while True:
        batch = next(batches, None)
        if batch is None:
            break
        optimizer.zero_grad()
        model(batch).sum().backward()
        optimizer.step()  # expect: GG103
        step += 1
        if step % evaluate_every == 0:
            model.eval()
            with torch.no_grad():
                model(batch)
""",
        # model.train() once before the epochs: the second epoch trains in eval
        """
import torch

def fit(model, optimizer, loader, val_loader, criterion):
    model.train()
    for epoch in range(10):
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()  # expect: GG103
        model.eval()
        with torch.no_grad():
            print(sum(criterion(model(x), y).item() for x, y in val_loader))
""",
        # no train() at all here: eval() inside the loop, and the model is the one trained
        """
import torch

def fit(model, optimizer, criterion, loader, val_loader):
    for epoch in range(3):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()  # expect: GG103
        model.eval()
        with torch.no_grad():
            print(sum(criterion(model(x), y).item() for x, y in val_loader))
""",
        # a helper of the same module that leaves its argument in eval
        """
import torch

def validate(model, loader):
    model.eval()
    with torch.no_grad():
        return [model(x) for x in loader]

def fit(model, optimizer, loader, val_loader):
    model.train()
    for epoch in range(3):
        for x in loader:
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()  # expect: GG103
        validate(model, val_loader)
""",
        # a method that leaves self.model in eval; the optimizer is stepped through a scaler
        """
import torch

class Trainer:
    def evaluate(self):
        self.model.eval()
        with torch.no_grad():
            return self.model(self.batch)

    def fit(self):
        self.model.train()
        for step in range(100):
            self.optimizer.zero_grad()
            self.scaler.scale(self.model(self.batch).sum()).backward()
            self.scaler.step(self.optimizer)  # expect: GG103
            self.scaler.update()
            if step % 10 == 0:
                self.evaluate()
""",
        # the optimizer is built here from the eval model's parameters
        """
import torch

def tune(model, other, x):
    model.eval()
    other.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()  # expect: GG103
""",
        # the step is inside a helper of this module, reached again after a helper's eval()
        """
import torch

def train_one_epoch(model, loader, optimizer):
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

def checkpoint_score(model, loader):
    model.eval()
    with torch.no_grad():
        return sum(model(x).sum().item() for x, _ in loader)

def main(model, loader, val_loader):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for epoch in range(2):
        train_one_epoch(model, loader, optimizer)  # expect: GG103
        if epoch == 0:
            print(checkpoint_score(model, val_loader))
""",
        # the step two helpers down, the model in eval from this function's own eval()
        """
import torch

def train_step(net, opt, x):
    opt.zero_grad()
    net(x).sum().backward()
    opt.step()

def train_epoch(net, opt, loader):
    for x in loader:
        train_step(net, opt, x)

def fit(model, optimizer, loader, val_batch):
    model.train()
    for epoch in range(3):
        train_epoch(model, optimizer, loader)  # expect: GG103
        model.eval()
        with torch.no_grad():
            model(val_batch)
""",
        # the helper moves the model it was given (still that model, in its mode) before its step
        """
import torch

def train_epoch(model, loader, optimizer, device):
    model = model.to(device)
    for x in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

def fit(model, loader, val_batch, device):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for epoch in range(3):
        train_epoch(model, loader, optimizer, device)  # expect: GG103
        model.eval()
        with torch.no_grad():
            model(val_batch)
""",
        # methods: self.train_epoch() steps, self.evaluate() leaves self.model in eval
        """
import torch

class Trainer:
    def train_epoch(self):
        for x in self.loader:
            self.optimizer.zero_grad()
            self.model(x).sum().backward()
            self.optimizer.step()

    def evaluate(self):
        self.model.eval()
        with torch.no_grad():
            return [self.model(x) for x in self.val_loader]

    def fit(self, epochs):
        self.model.train()
        for epoch in range(epochs):
            self.train_epoch()  # expect: GG103
            self.evaluate()
""",
        # a script: the stepping helper uses the global model, a test() leaves it in eval
        """
import torch

net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

def train(loader):
    for x in loader:
        optimizer.zero_grad()
        net(x).sum().backward()
        optimizer.step()

def test(batch):
    net.eval()
    with torch.no_grad():
        net(batch)

for epoch in range(3):
    train([torch.randn(2, 4)])  # expect: GG103
    test(torch.randn(2, 4))
""",
        # mutually recursive helpers that step: found, and the analysis ends
        """
import torch

def ping(model, optimizer, batches):
    if batches:
        optimizer.zero_grad()
        model(batches[0]).sum().backward()
        optimizer.step()
        pong(model, optimizer, batches[1:])

def pong(model, optimizer, batches):
    ping(model, optimizer, batches)

def fit(model, loader, val_batch):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for epoch in range(3):
        ping(model, optimizer, list(loader))  # expect: GG103
        model.eval()
        with torch.no_grad():
            model(val_batch)
""",
    ],
    "GG104": [
        # a return from inside a with block and an exception handler
        """
import torch

def a(model, x, lock):
    torch.set_grad_enabled(False)  # expect: GG104
    with lock:
        return model(x)

def b(model, x):
    try:
        torch.set_grad_enabled(False)  # expect: GG104
        y = model(x)
    except RuntimeError:
        return None
    torch.set_grad_enabled(True)
    return y
""",
        """
import torch

def evaluate(model, x):
    model.eval()
    torch.set_grad_enabled(False)  # expect: GG104
    return model(x)
""",
        # other spellings; a path that returns before the restore
        """
import torch
from torch import set_grad_enabled

def a():
    torch.autograd.set_grad_enabled(False)  # expect: GG104

def b(fast):
    set_grad_enabled(mode=False)  # expect: GG104
    if fast:
        return 1
    set_grad_enabled(True)
    return 2
""",
    ],
    "GG105": [
        # backward() inside no_grad, on a loss computed there
        """
import torch

def step(model, criterion, optimizer, x, y):
    optimizer.zero_grad()
    with torch.no_grad():
        loss = criterion(model(x), y)
        loss.backward()  # expect: GG105
    optimizer.step()
""",
        # computed under no_grad, backward after the block; inline; decorated function
        """
import torch

def late(model, x):
    with torch.no_grad():
        out = model(x)
    out.sum().backward()  # expect: GG105

def inline(model, x):
    with torch.inference_mode():
        model(x).sum().backward()  # expect: GG105

@torch.no_grad()
def decorated(model, x):
    loss = model(x).sum()
    torch.autograd.backward(loss)  # expect: GG105
""",
    ],
    "GG106": [
        # total_loss += loss: the loss reached backward, the accumulator never does
        """
def train(model, loader, optimizer, criterion):
    model.train()
    total_loss = 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss  # expect: GG106
    print(total_loss.item() / len(loader))
""",
        # a list of loss tensors
        """
import torch

def train(model, loader, optimizer, criterion):
    losses = []
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss)  # expect: GG106
    print(sum(l.item() for l in losses))
""",
    ],
    "GG107": [
        # a step after an exception handler that skipped the backward
        """
def train(model, optimizer, batches):
    for batch in batches:
        optimizer.zero_grad()
        try:
            loss = model(batch).sum()
            loss.backward()
        except ValueError:
            print("skipped a bad batch")
        optimizer.step()  # expect: GG107
""",
        """
def train(model, loader, optimizer, criterion):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        optimizer.step()  # expect: GG107
""",
        # backward behind a flag: one path steps without it
        """
def train(model, loader, optimizer, criterion, log_gradients):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        if log_gradients:
            loss.backward()
        optimizer.step()  # expect: GG107
""",
        # model.zero_grad() zeroes what the optimizer holds too
        """
def train(model, optimizer, x):
    model.zero_grad()
    out = model(x)
    print(out.sum().item())
    optimizer.step()  # expect: GG107
""",
    ],
    "GG108": [
        """
import torch
from torch import no_grad

@torch.no_grad()
async def serve(model, x):  # expect: GG108
    return model(x)

@torch.inference_mode()
async def stream(model, xs):  # expect: GG108
    for x in xs:
        yield model(x)

@torch.enable_grad()
async def attack(model, x):  # expect: GG108
    return model(x)

@torch.set_grad_enabled(False)
async def quiet(model, x):  # expect: GG108
    return model(x)

@no_grad
async def bare(model, x):  # expect: GG108
    return model(x)
""",
    ],
    "GG109": [
        """
import torch

def evaluate(model, x):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        y = model(x)
    model.train(was_training)  # expect: GG109
    return y
""",
        """
def probe(model, head, x):
    mode = model.training
    model.eval()
    y = model(x)
    model.train(mode=mode)  # expect: GG109
    model.train(model.training)  # expect: GG109
    return y
""",
    ],
    "GG110": [
        """
import torch

def evaluate(model, loader):
    model.eval()  # expect: GG110
    with torch.no_grad():
        return [model(x) for x in loader]
""",
    ],
}


VALID: dict[str, list[str]] = {
    "GG101": [
        # train() while gradients are already off is deliberate: BatchNorm recalibration
        """
import torch

@torch.no_grad()
def update_bn(loader, model):
    model.train()
    for x in loader:
        model(x)

def recalibrate(model, loader):
    with torch.no_grad():
        model.train()
        for x in loader:
            model(x)
""",
        # a model handed to a function of another module may come back in eval
        """
import torch
from torch import nn
from helpers import prepare_for_inference

model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
prepare_for_inference(model)
model.apply(lambda m: None)
with torch.no_grad():
    model(torch.ones(1, 4))
""",
        # mode unknown here: a teacher
        """
import torch

def distill(student, teacher, x):
    student.train()
    with torch.no_grad():
        target = teacher(x)
    return (student(x) - target).pow(2).mean()
""",
        # mode unknown here: an EMA copy
        """
import copy
import torch
from torch import nn

model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
ema = copy.deepcopy(model)
with torch.no_grad():
    ema(torch.ones(1, 4))
""",
        # a no_grad block that contains a backward
        """
import torch

def probe(model, x):
    model.train()
    with torch.no_grad():
        out = model(x)
        with torch.enable_grad():
            loss = model(x).sum()
            loss.backward()
    return out
""",
        # eval() first; Monte-Carlo dropout declared with gradguard.allow
        """
import torch
import gradguard

def predict(model, x):
    model.eval()
    with torch.no_grad():
        y = model(x)
    model.head.train()
    with torch.no_grad(), gradguard.allow("train-mode-without-grad"):
        samples = [model.head(x) for _ in range(8)]
    return y, samples
""",
        # a module with nothing eval() changes; a loss module
        """
import torch
from torch import nn

policy = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
criterion = nn.CrossEntropyLoss()
with torch.no_grad():
    action = policy(torch.ones(4)).argmax()
    value = criterion(policy(torch.ones(1, 4)), torch.zeros(1, dtype=torch.long))
""",
        # grad mode not known to be off
        """
import torch

def step(model, x, training):
    model.train()
    with torch.set_grad_enabled(training):
        return model(x)
""",
    ],
    "GG102": [
        # a class's own eval(args) is not nn.Module.eval() (found in real code: sympy)
        """
import torch

def check(Commutator, c1):
    Commutator.eval(c1, c1)
    assert Commutator(c1, c1) == 0
""",
        # FGSM: the eval forward's loss reaches backward
        """
import torch.nn.functional as F

def fgsm(model, x, y, eps):
    model.eval()
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return x + eps * x.grad.sign()
""",
        # saliency; Grad-CAM with autograd.grad
        """
import torch

def saliency(model, x):
    model.eval()
    scores = model(x)
    scores.max().backward()
    return x.grad

def grad_cam(model, x, features):
    model.eval()
    out = model(x)
    (grads,) = torch.autograd.grad(out.max(), features)
    return grads
""",
        # bodies of functions decorated with no_grad / inference_mode, generators included
        """
import torch

@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    return [model(x).argmax(1) for x in loader]

@torch.inference_mode()
def stream(model, loader):
    model.eval()
    for x in loader:
        yield model(x)
""",
        # calls on non-model attributes
        """
import torch

class Pipeline:
    def run(self, text):
        self.model.eval()
        tokens = self.tokenizer(text)
        with torch.no_grad():
            return self.model(tokens)
""",
        # the result is returned to a caller, who may take its gradient
        """
def predict(model, x):
    model.eval()
    return model(x)
""",
        # a helper that is only ever called under no_grad
        """
import torch

def _evaluate(model, loader):
    model.eval()
    return sum(model(x).sum().item() for x in loader)

def validate(model, loader):
    with torch.no_grad():
        return _evaluate(model, loader)
""",
        # the corpus's clean train/validate loop
        """
import torch

def fit(model, optimizer, loader, val_loader, criterion):
    for epoch in range(2):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val = sum(criterion(model(x), y).item() for x, y in val_loader)
        print(epoch, val)
""",
    ],
    "GG103": [
        # evaluation inside gradguard.evaluating: the mode is restored, training goes on
        """
import gradguard

def fit(model, optimizer, loader, val_batch):
    model.train()
    for epoch in range(3):
        for x in loader:
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
        with gradguard.evaluating(model):
            model(val_batch)
""",
        # a sub-receiver while the parent is tracked in train (frozen BatchNorm)
        """
def finetune(model, optimizer, loader):
    model.train()
    model.backbone.eval()
    for x in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
""",
        # loop variables
        """
from torch import nn

def finetune(model, optimizer, loader):
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for x in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
""",
        # distillation: the teacher in eval while the student switched here trains
        """
import torch

def distill(student, teacher, loader):
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    student.train()
    teacher.eval()
    for x in loader:
        with torch.no_grad():
            target = teacher(x)
        optimizer.zero_grad()
        (student(x) - target).pow(2).mean().backward()
        optimizer.step()
""",
        # DQN: a target network in eval
        """
import torch

def update(policy, target, optimizer, batch):
    policy.train()
    target.eval()
    with torch.no_grad():
        next_q = target(batch).max(1).values
    loss = (policy(batch).max(1).values - next_q).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""",
        # state unknown at entry; a scheduler stepped after evaluation
        """
import torch

def train_step(model, optimizer, x):
    optimizer.zero_grad()
    model(x).sum().backward()
    optimizer.step()

def epoch_end(model, scheduler, val):
    model.eval()
    with torch.no_grad():
        model(val)
    scheduler.step()
""",
        # train() at the top of every epoch
        """
import torch

def fit(model, optimizer, loader, val_loader):
    for epoch in range(3):
        model.train()
        for x in loader:
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            [model(x) for x in val_loader]
""",
        # an unrelated model evaluated, nothing trained here: its mode is not this step's business
        """
import torch

def train_epoch(student, teacher, optimizer, loader):
    teacher.eval()
    for x in loader:
        with torch.no_grad():
            t = teacher(x)
        optimizer.zero_grad()
        (student(x) - t).pow(2).mean().backward()
        optimizer.step()
""",
        # a stepping helper that puts the model in training itself
        """
import torch

def train_one_epoch(model, loader, optimizer):
    model.train()
    for x in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

def validate(model, loader):
    model.eval()
    with torch.no_grad():
        return [model(x) for x in loader]

def main(model, loader, val_loader):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):
        train_one_epoch(model, loader, optimizer)
        validate(model, val_loader)
""",
        # a stepping helper reached only in training: train() at the top of every epoch
        """
import torch

def train_one_epoch(model, loader, optimizer):
    for x in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

def validate(model, loader):
    model.eval()
    with torch.no_grad():
        return [model(x) for x in loader]

def main(model, loader, val_loader):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):
        model.train()
        train_one_epoch(model, loader, optimizer)
        validate(model, val_loader)
""",
        # the helper hands the model to code not seen here before its step (it may train it)
        """
import torch
from mylib import prepare_for_training

def train_one_epoch(model, loader, optimizer):
    prepare_for_training(model)
    for x in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

def main(model, loader, val_batch):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for epoch in range(3):
        train_one_epoch(model, loader, optimizer)
        model.eval()
        with torch.no_grad():
            model(val_batch)
""",
        # the stepping helper puts the model in training through a helper of its own
        """
import torch

def set_training(model):
    model.train()

def train_one_epoch(model, loader, optimizer):
    set_training(model)
    for x in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

def main(model, loader, val_batch):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for epoch in range(3):
        train_one_epoch(model, loader, optimizer)
        model.eval()
        with torch.no_grad():
            model(val_batch)
""",
        # a script: the stepping helper trains the global model through another helper
        """
import torch

net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

def prepare():
    net.train()

def train(loader):
    prepare()
    for x in loader:
        optimizer.zero_grad()
        net(x).sum().backward()
        optimizer.step()

def test(batch):
    net.eval()
    with torch.no_grad():
        net(batch)

for epoch in range(3):
    train([torch.randn(2, 4)])
    test(torch.randn(2, 4))
""",
        # a distillation helper: the teacher frozen in eval, the student put in training there
        """
import torch

def freeze(model):
    model.eval()

def distill_epoch(student, teacher, optimizer, loader):
    student.train()
    for x in loader:
        with torch.no_grad():
            t = teacher(x)
        optimizer.zero_grad()
        (student(x) - t).pow(2).mean().backward()
        optimizer.step()

def main(student, teacher, loader):
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    teacher.train()
    freeze(teacher)
    for epoch in range(3):
        distill_epoch(student, teacher, optimizer, loader)
""",
        # recursive and mutually recursive stepping helpers, each putting the model in training
        """
import torch

def train_steps(model, optimizer, batches):
    model.train()
    if batches:
        optimizer.zero_grad()
        model(batches[0]).sum().backward()
        optimizer.step()
        train_steps(model, optimizer, batches[1:])
        more_steps(model, optimizer, batches[1:])

def more_steps(model, optimizer, batches):
    train_steps(model, optimizer, batches)

def fit(model, loader, val_batch):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for epoch in range(3):
        train_steps(model, optimizer, list(loader))
        model.eval()
        with torch.no_grad():
            model(val_batch)
""",
        # the optimizer given to the helper steps another model's parameters
        """
import torch

def step_discriminator(netD, netG, optimizerD, noise):
    optimizerD.zero_grad()
    netD(netG(noise).detach()).mean().backward()
    optimizerD.step()

def main(netD, netG, noise, batch):
    optimizerD = torch.optim.Adam(netD.parameters())
    netG.train()
    for epoch in range(3):
        step_discriminator(netD, netG, optimizerD, noise)
        netG.eval()
        with torch.no_grad():
            netG(noise)
""",
    ],
    "GG104": [
        # a context manager's __enter__ leaves gradients off for its __exit__ (torch's own)
        """
import torch

class NoGrad:
    def __enter__(self):
        self.prev = torch.is_grad_enabled()
        torch.set_grad_enabled(False)

    def __exit__(self, *exc):
        torch.set_grad_enabled(self.prev)
""",
        # switched off and back on under the same flag (found in real code)
        """
import torch

def focal(self, xs, y):
    if self.disable_grad_focal:
        torch.set_grad_enabled(False)
    weight = torch.pow(1 - xs * y, 2)
    if self.disable_grad_focal:
        torch.set_grad_enabled(True)
    return weight
""",
        # the with form; a restore in finally; a restore on every path
        """
import torch

def a(model, x):
    with torch.set_grad_enabled(False):
        return model(x)

def b(model, x):
    torch.set_grad_enabled(False)
    try:
        return model(x)
    finally:
        torch.set_grad_enabled(True)

def c(model, x):
    torch.set_grad_enabled(False)
    y = model(x)
    torch.set_grad_enabled(True)
    return y

def d(model, x):
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    y = model(x)
    torch.set_grad_enabled(previous)
    return y
""",
        # a script's top level: the process ends with it
        """
import torch

torch.set_grad_enabled(False)
print(torch.ones(1) * 2)
""",
    ],
    "GG105": [
        # a helper whose name mentions backward is not a backward (found in real code)
        """
import torch

def compile_graph(fw_module, bw_module):
    with torch.no_grad():
        saved = fw_module.run()
    return _categorize_saved_tensors_for_backward(saved, bw_module)
""",
        # gradients that already exist keep their graph under no_grad (found in real code)
        """
import torch

@torch.no_grad()
def set_hessian(params, zs):
    grads = [p.grad for p in params]
    return torch.autograd.grad(grads, params, grad_outputs=zs)
""",
        # values from an enable_grad block inside
        """
import torch

def attack(model, x):
    with torch.no_grad():
        x = x + 0.1
        with torch.enable_grad():
            x.requires_grad_(True)
            loss = model(x).sum()
        loss.backward()
    return x.grad
""",
        # computed with gradients on; backward inside no_grad works on it
        """
import torch

def step(model, x):
    loss = model(x).sum()
    with torch.no_grad():
        loss.backward()
""",
        # off on one path only
        """
import torch

def maybe(model, x, frozen):
    if frozen:
        with torch.no_grad():
            out = model(x)
    else:
        out = model(x)
    out.sum().backward()
""",
        # a leaf that asks for gradients after the no_grad block
        """
import torch

def pgd(model, x):
    with torch.no_grad():
        delta = torch.zeros_like(x)
    delta.requires_grad_(True)
    loss = model(x + delta).sum()
    loss.backward()
    return delta.grad
""",
    ],
    "GG106": [
        # an element of an unpacked forward result may be a plain number (found in real code:
        # torchtune's rollout timing)
        """
import torch

def rollout(self, data, frames):
    time_generate = 0
    while frames > 0:
        env_input, generation_time = self.policy(data)
        time_generate += generation_time
        frames -= 1
    return env_input
""",
        # enumerate's index and a dict's keys are not graphs (found in real code: peft)
        """
import torch

def inject(prompt_encoder, prompt_tokens):
    past_key_values = prompt_encoder(prompt_tokens)
    layers, names = [], []
    for layer_idx, value in enumerate(past_key_values):
        layers.append(layer_idx)
    for name, value in prompt_encoder(prompt_tokens).items():
        names.append(name)
    return len(layers) + len(names)
""",
        # names that only contain a model word, in code without torch (found in real code)
        """
def draw(fancy_arrow_factory, random_number_generator, expr):
    arrows, numbers, factors = [], [], []
    for i in range(10):
        arrows.append(fancy_arrow_factory(i))
        numbers.append(random_number_generator(1, 1000))
    for item in expr.as_ordered_factors():
        factors.append(item)
    return len(arrows) + len(numbers) + len(factors)
""",
        # a project's own no_grad decorator (found in real code)
        """
from utils import smart_inference_mode

@smart_inference_mode()
def run(model, loader):
    model.eval()
    stats = []
    for x in loader:
        stats.append(model(x))
    print(len(stats))
""",
        # functions named for what they return are not forwards (found in real code)
        """
from timm import create_model, list_models

def bulk(args, task):
    results = []
    eval_model = task.get_eval_model()
    for name in list_models(pretrained=True):
        model = create_model(name)
        results.append(model)
        results.append(eval_model)
    print(results)
""",
        # calling a class builds a module, it does not run one (found in real code)
        """
from torch import nn

class Net(nn.Module):
    pass

processes = []
for rank in range(4):
    model = Net()
    processes.append(model)
print(processes)
""",
        # .item(), .detach(), float(), .cpu().numpy()
        """
def train(model, loader, optimizer, criterion):
    a, b, c, d = 0, 0, 0, []
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        a += loss.item()
        b += loss.detach()
        c += float(loss)
        d.append(loss.cpu().numpy())
    print(a, b, c, d)
""",
        # REINFORCE: the accumulator is stacked into a backward
        """
import torch
from torch.distributions import Categorical

def finish_episode(policy, optimizer, states, returns):
    log_probs = []
    for state in states:
        probs = policy(state)
        m = Categorical(probs)
        action = m.sample()
        log_probs.append(m.log_prob(action))
    loss = -(torch.stack(log_probs) * returns).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""",
        # a summed loss returned for the caller's backward; one summed and backward'd here
        """
def multi_scale_loss(model, criterion, xs, ys):
    loss = 0
    for x, y in zip(xs, ys):
        loss += criterion(model(x), y)
    return loss

def accumulate(model, criterion, optimizer, xs, ys):
    total = 0
    for x, y in zip(xs, ys):
        total += criterion(model(x), y)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
""",
        # under no_grad
        """
import torch

def evaluate(model, loader, criterion):
    model.eval()
    total = 0
    with torch.no_grad():
        for x, y in loader:
            total += criterion(model(x), y)
    return total.item()
""",
    ],
    "GG107": [
        # per-sample gradients set by hand (found in real code: Opacus)
        """
def train(model, optimizer, loader, params, compute_sample_grads):
    for images, target in loader:
        per_sample_grads = compute_sample_grads(params, images, target)
        for p, g in zip(params, per_sample_grads):
            p.grad_sample = g
        optimizer.step()
        optimizer.zero_grad()
""",
        # a loop over optimizers: each step is another optimizer (found in real code: FSDP)
        """
def step_all(params):
    for p in params:
        for optim in p.optimizers:
            optim.step()
        optim.zero_grad(set_to_none=True)
""",
        # an inner loop that accumulates the backward over micro-batches (found in real code)
        """
def train(model, optimizer, batches_per_step, loader):
    for step in range(100):
        samples = [next(loader) for _ in range(batches_per_step)]
        for batch in samples:
            model(batch).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
""",
        # the backward is in a closure called right before the step (found in real code)
        """
def training_step(model, opt_gen, opt_dis, batch):
    def dis_closure():
        model(batch).sum().backward()

    opt_gen.zero_grad()
    dis_closure()
    opt_dis.step()
    opt_dis.zero_grad()
""",
        # step(closure)
        """
def train(model, optimizer, x):
    def closure():
        optimizer.zero_grad()
        loss = model(x).sum()
        loss.backward()
        return loss
    optimizer.zero_grad()
    optimizer.step(closure)
""",
        # code that assigns .grad itself
        """
def apply(model, optimizer, grads):
    optimizer.zero_grad()
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    optimizer.step()
""",
        # every form of backward
        """
import torch

def forms(model, optimizer, accelerator, fabric, scaler, x):
    optimizer.zero_grad()
    accelerator.backward(model(x).sum())
    optimizer.step()
    optimizer.zero_grad()
    fabric.backward(model(x).sum())
    optimizer.step()
    optimizer.zero_grad()
    scaler.scale(model(x).sum()).backward()
    scaler.step(optimizer)
    optimizer.zero_grad()
    torch.autograd.backward(model(x).sum())
    optimizer.step()

class Lit:
    def training_step(self, batch):
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(self.model(batch).sum())
        opt.step()
""",
        # gradient accumulation; a helper that does the backward; another optimizer's zero_grad
        """
def backward_pass(loss):
    loss.backward()

def train(model, opt_g, opt_d, loader, accumulation):
    for i, x in enumerate(loader):
        backward_pass(model(x).sum())
        if (i + 1) % accumulation == 0:
            opt_g.step()
            opt_g.zero_grad()
    opt_d.zero_grad()
    opt_g.step()
""",
        # nothing known since the function's entry
        """
def step(optimizer):
    optimizer.step()
""",
    ],
    "GG108": [
        # sync generators (torch handles them); the with form inside an async def
        """
import torch
import gradguard

@torch.no_grad()
def stream(model, xs):
    for x in xs:
        yield model(x)

async def serve(model, x):
    with torch.no_grad():
        return model(x)

@gradguard.inference_fn
async def handled(model, x):
    return model(x)
""",
    ],
    "GG109": [
        # a child synced to its parent's flag (found in real code: torch's parametrize)
        """
def register(module, parametrization):
    parametrization.train(module.training)
""",
        # literal arguments; a restore guarded by the flag
        """
def evaluate(model, x):
    was_training = model.training
    model.eval()
    y = model(x)
    model.train(True)
    if was_training:
        model.train()
    return y
""",
        # a module's own train(self, mode) override
        """
from torch import nn

class Frozen(nn.Module):
    def train(self, mode=True):
        super().train(mode)
        self.backbone.train(False)
        self.teacher.train(self.training)
        return self
""",
    ],
    "GG110": [
        """
import torch
import gradguard

def a(model, x):
    with gradguard.evaluating(model):
        return model(x)

def b(model, x):
    model.eval()
    return model(x)

def c(model, x):
    with torch.no_grad():
        return model(x)
""",
    ],
}
