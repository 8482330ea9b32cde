import cadquery as cq

result = cq.Workplane("YZ").rect(80, 80).extrude(40).faces(">X").workplane().circle(25).cutBlind(-15)
