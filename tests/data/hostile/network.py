# expect: OSError|ConnectionRefusedError|TimeoutError|PermissionError|ConnectionError
# opens a network connection
import torch
import torch.nn as nn
import torch.nn.functional as F
import socket


class Network(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        socket.create_connection(('192.0.2.1', 80), timeout=2)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        pass
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
