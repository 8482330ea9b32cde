import cadquery as cq

result = cq.Workplane("XZ").rect(40, 60).rect(32, 52).extrude(150)
