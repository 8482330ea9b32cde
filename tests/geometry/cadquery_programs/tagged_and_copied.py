import copy

import cadquery as cq

base = cq.Workplane("XY").box(40, 40, 5).faces(">Z").tag("top")
boss = base.workplane().circle(8).extrude(20)
drilled = boss.workplaneFromTagged("top").rarray(30, 30, 2, 2).hole(4)
twin = copy.deepcopy(drilled).translate((50, 0, 0))
result = drilled.union(twin)
