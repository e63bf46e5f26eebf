"""Probe (not part of naba): how far a TF-IDF + logistic-regression model, alone and averaged
with topic-ant's probabilities, gets on ANT's dev split. Dev only; the test split is not read.

    naba eval --task topic --data ../shared/datasets/antcorpus/ant_corpus_v1.1.jsonl \
        --filter split=dev --text-col text --text-fallback title --label-col category \
        --id-col docno --model topic-ant --report-dir target/ant-dev-w256
    python scripts/probes/ant_tfidf_ensemble.py target/ant-dev-w256/predictions.jsonl

Needs scikit-learn and scipy.
"""
import json, numpy as np, sys
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, accuracy_score
from scipy.sparse import hstack
rows=[json.loads(l) for l in open('../shared/datasets/antcorpus/ant_corpus_v1.1.jsonl')]
def txt(d): return (d.get('title') or '')+' \n '+(d.get('text') or d.get('title') or '')
sp={s:[d for d in rows if d['split']==s] for s in ['train','dev']}
preds_path=sys.argv[1] if len(sys.argv)>1 else 'target/ant-dev-w256/predictions.jsonl'
labels=sorted(set(d['category'] for d in rows))
wv=TfidfVectorizer(sublinear_tf=True,min_df=2,ngram_range=(1,2),max_features=300000)
cv=TfidfVectorizer(sublinear_tf=True,min_df=3,analyzer='char_wb',ngram_range=(2,5),max_features=300000)
Xtr=hstack([wv.fit_transform(map(txt,sp['train'])),cv.fit_transform(map(txt,sp['train']))]).tocsr()
Xdv=hstack([wv.transform(map(txt,sp['dev'])),cv.transform(map(txt,sp['dev']))]).tocsr()
ytr=[d['category'] for d in sp['train']]; ydv=[d['category'] for d in sp['dev']]
for C in [1,3,10,30]:
    m=LogisticRegression(C=C,max_iter=2000,class_weight='balanced'); m.fit(Xtr,ytr)
    P=m.predict_proba(Xdv); pred=m.classes_[P.argmax(1)]
    print('LR C',C,'dev macro',round(f1_score(ydv,pred,average='macro'),4),'acc',round(accuracy_score(ydv,pred),4))
    tp={}
    for l in open(preds_path):
        d=json.loads(l); tp[d['id']]=d['scores']
    T=np.array([[tp[d['docno']][c] for c in m.classes_] for d in sp['dev']])
    for w in [0.3,0.5,0.7]:
        Q=w*P+(1-w)*T; pr=m.classes_[Q.argmax(1)]
        print('   ens w',w,'macro',round(f1_score(ydv,pr,average='macro'),4),'acc',round(accuracy_score(ydv,pr),4))
    sys.stdout.flush()
tpred=m.classes_[T.argmax(1)]
print('transformer dev macro',round(f1_score(ydv,tpred,average='macro'),4),'acc',round(accuracy_score(ydv,tpred),4))
