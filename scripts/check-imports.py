"""Checks that a crate's modules import only downward: no import cycle between modules and no module importing
one of its ancestors (unit tests excluded). Usage: check-imports.py CRATE/src ...; exits 1 on a problem."""
import os,re,sys
def check(root):
    mods={}
    for d,_,fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs') or f=='tests.rs' or f=='main.rs': continue
            p=os.path.join(d,f); rel=os.path.relpath(p,root)[:-3].split(os.sep)
            if rel[-1]=='mod': rel=rel[:-1]
            if rel==['lib']: rel=[]
            mods[tuple(rel)]=p
    def resolve(path):
        parts=tuple(path)
        while parts and parts not in mods: parts=parts[:-1]
        return parts
    edges={}
    for m,p in mods.items():
        s=open(p).read()
        cut=s.find('#[cfg(test)]\nmod tests')
        if cut>=0: s=s[:cut]
        s=re.sub(r'//.*','',s)
        targets=set()
        for ref in re.findall(r'crate::([a-z_]+(?:::[a-z_]+)*)',s):
            t=resolve(ref.split('::'))
            if t and t!=m: targets.add(t)
        for ref in re.findall(r'\bsuper::([a-z_]+(?:::[a-z_]+)*|\{)',s):
            base=m[:-1]
            t=resolve(base+tuple(x for x in ref.split('::') if x!='{'))
            if t!=m: targets.add(t)
        edges[m]=targets
    bad=0
    for m,ts in sorted(edges.items()):
        for t in ts:
            if m[:len(t)]==t and len(t)<len(m):
                print('up (child imports ancestor):','::'.join(m),'->','::'.join(t)); bad+=1
    # cycles
    def reach(a,b,seen=None):
        seen=seen or set()
        for n in edges.get(a,()):
            if n==b: return True
            if n not in seen:
                seen.add(n)
                if reach(n,b,seen): return True
        return False
    for m in edges:
        for t in edges[m]:
            if reach(t,m): print('cycle:','::'.join(m),'<->','::'.join(t)); bad+=1
    print(f'{root}: {len(mods)} modules, {bad} import problems')
    return bad


if __name__ == '__main__':
    sys.exit(1 if sum(check(os.path.abspath(r)) for r in sys.argv[1:]) else 0)
